"""Moving the item: sorters (chute, flaps, guidance LEDs), indicators, and the servo drives."""
