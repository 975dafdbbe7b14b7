"""ds-synth: agentic data-science training data from real sources."""

__version__ = "0.1.0"
