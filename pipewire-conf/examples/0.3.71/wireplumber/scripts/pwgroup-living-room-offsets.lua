-- Written by `pwgroup export-conf living-room`: latency offsets for group 'living-room', so that
-- combine-stream's latency compensation adds each member's configured delay (the largest delay minus
-- the member's own, in ns, on top of what the speaker reports). Loaded by WirePlumber (0.4: a
-- load_script line in main.lua.d; 0.5: a component in wireplumber.conf.d).
local offsets = {
  { "matches", "bluez_output.AA_BB_CC_00_00_01.*", 0 },
  { "matches", "bluez_output.AA_BB_CC_00_00_02.*", 140460000 },
}
pwgroup_offset_managers = pwgroup_offset_managers or {}
for _, o in ipairs(offsets) do
  local verb, name, nsec = o[1], o[2], o[3]
  local om = ObjectManager { Interest { type = "node", Constraint { "node.name", verb, name } } }
  om:connect("object-added", function (_, node)
    node:set_param("Props", Pod.Object { "Spa:Pod:Object:Param:Props", "Props", latencyOffsetNsec = nsec })
  end)
  om:activate()
  table.insert(pwgroup_offset_managers, om)  -- kept: a collected manager stops watching
end
