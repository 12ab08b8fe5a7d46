"""Sans-IO cores: state and dispatch, no waiting."""
