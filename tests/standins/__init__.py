"""Stand-ins for Ollama and vLLM that speak their wire protocols (stdlib only)."""
