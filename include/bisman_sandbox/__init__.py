"""The local sandbox: real services and emulators to rehearse the rollout on one machine."""
