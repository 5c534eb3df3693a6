"""Helpers the tests share (sshd, Docker images, report data, ...), imported as ``support.<module>``."""
