"""What agency systems use to reach the relay: the Python SDK, the REST gateway, the folder drop."""
