"""ViLMS Edge gateway: an OpenAI-compatible front for the Ollama and vLLM engines on an edge box."""

__version__ = "0.1.0"
