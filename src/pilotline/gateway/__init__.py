"""The shell around the rules core: sinks, storage, wiring, API and CLI."""
