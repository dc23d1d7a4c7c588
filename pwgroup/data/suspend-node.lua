-- WirePlumber 0.4.13's suspend-node.lua with one fix, shipped by pwgroup.
--
-- The stock script arms a 5-second "Suspend" timer when an Audio node goes idle and never disarms it when
-- the node is removed, so a Bluetooth speaker (or any sink) that leaves while idle makes WirePlumber send a
-- command to a dead proxy: a segfault in wp_node_send_command (seen on Debian 12, wireplumber 0.4.13).
-- This copy drops the timer on "object-removed". Install it as
--   ~/.config/wireplumber/scripts/suspend-node.lua
-- (WirePlumber 0.4 looks there before /usr/share/wireplumber/scripts).
--
-- Original: Copyright © 2021 Collabora Ltd., George Kiagiadakis. SPDX-License-Identifier: MIT

om = ObjectManager {
  Interest { type = "node",
    Constraint { "media.class", "matches", "Audio/*" }
  },
  Interest { type = "node",
    Constraint { "media.class", "matches", "Video/*" }
  },
}

sources = {}

local function disarm (id)
  if sources[id] then
    sources[id]:destroy()
    sources[id] = nil
  end
end

om:connect("object-added", function (om, node)
  node:connect("state-changed", function (node, old_state, cur_state)
    local id = node["bound-id"]
    disarm(id)

    if cur_state == "idle" or cur_state == "error" then
      local timeout =
          tonumber(node.properties["session.suspend-timeout-seconds"]) or 5
      if timeout == 0 then
        return
      end
      sources[id] = Core.timeout_add(timeout * 1000, function()
        sources[id] = nil
        Log.info(node, "was idle for a while; suspending ...")
        node:send_command("Suspend")
        return false
      end)
    end
  end)
end)

om:connect("object-removed", function (om, node)
  disarm(node["bound-id"])
end)

om:activate()
