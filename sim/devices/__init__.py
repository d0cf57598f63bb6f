"""Simulated BLE health meters and the panic pendant, as bumble GATT peripherals that behave like the products."""
