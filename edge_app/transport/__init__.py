"""The MQTT transport (the only module importing paho) and its in-memory twin."""
