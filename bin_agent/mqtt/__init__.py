"""Talking to the broker: the agent's link, its commands, Home Assistant discovery, and the
short-lived client the operator's tools use."""
