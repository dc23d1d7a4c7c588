#!/bin/sh
# Written by `pwgroup export-conf living-room`: latency offsets for combine-stream's compensation.
# Run after the speakers connect (offsets belong to the card's output port).
set -u
offset() {  # card, microseconds
    port=$(LC_ALL=C pactl list cards | awk -v card="$1" '$1 == "Name:" { on = ($2 == card) } on && $1 ~ /-output:$/ { sub(":", "", $1); print $1; exit }')
    if [ -n "$port" ]; then pactl set-port-latency-offset "$1" "$port" "$2"; else echo "$1: not connected" >&2; fi
}
offset bluez_card.AA_BB_CC_00_00_01 0
offset bluez_card.AA_BB_CC_00_00_02 140460
