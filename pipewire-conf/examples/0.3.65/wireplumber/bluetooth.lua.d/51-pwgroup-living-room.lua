-- Written by `pwgroup export-conf living-room`: WirePlumber 0.4 rules for the Bluetooth speakers of
-- group 'living-room': A2DP only (no call profile), never suspended (a resume costs the first words).
-- Install into ~/.config/wireplumber/bluetooth.lua.d/ and restart WirePlumber.
table.insert(bluez_monitor.rules, {
  matches = { { { "device.name", "equals", "bluez_card.AA_BB_CC_00_00_01" } } },
  apply_properties = {
    ["device.profile"] = "a2dp-sink",
    ["bluez5.auto-connect"] = "[ a2dp_sink ]",
  },
})
table.insert(bluez_monitor.rules, {
  matches = { { { "node.name", "matches", "bluez_output.AA_BB_CC_00_00_01.*" } } },
  apply_properties = {
    ["session.suspend-timeout-seconds"] = 0,
    ["node.pause-on-idle"] = false,
  },
})
table.insert(bluez_monitor.rules, {
  matches = { { { "device.name", "equals", "bluez_card.AA_BB_CC_00_00_02" } } },
  apply_properties = {
    ["device.profile"] = "a2dp-sink",
    ["bluez5.auto-connect"] = "[ a2dp_sink ]",
  },
})
table.insert(bluez_monitor.rules, {
  matches = { { { "node.name", "matches", "bluez_output.AA_BB_CC_00_00_02.*" } } },
  apply_properties = {
    ["session.suspend-timeout-seconds"] = 0,
    ["node.pause-on-idle"] = false,
  },
})
