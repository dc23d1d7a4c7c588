-- Written by `pwgroup export-conf living-room`: WirePlumber 0.4 loads the latency offsets of group
-- 'living-room' (scripts/pwgroup-living-room-offsets.lua).
-- Install into ~/.config/wireplumber/main.lua.d/.
load_script("pwgroup-living-room-offsets.lua")
