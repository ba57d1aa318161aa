"""Fleet provisioning: the locked-down Mosquitto configuration for a fleet.

``edge-app broker gen --fleet FILE --out DIR`` turns a fleet file (devices and their roles) and a
secrets seed into a password file, an ACL, a TLS CA with server and client certificates, a
``mosquitto.conf`` and one credentials directory per device. Everything is derived from the seed,
so a second run with the same inputs writes byte-identical files (and touches none of them).
"""
