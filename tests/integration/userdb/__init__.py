"""userdb integration tests (a package, so its conftest does not shadow the shared one)."""
