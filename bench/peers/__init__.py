"""Peer servers started by the suite: the minimal relay and python-socketio."""
