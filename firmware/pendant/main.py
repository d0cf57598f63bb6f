# Runs at every boot and every wake from deep sleep (both are resets on the ESP32).
import app

app.main()
