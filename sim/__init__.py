"""The world around the hub: simulated meters and pendant over bumble, the reference platform."""
