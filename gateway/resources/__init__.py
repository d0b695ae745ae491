"""One resource class per endpoint family; each gets what it needs through ``__init__``."""

from gateway.resources.chat import ChatResource
from gateway.resources.embeddings import EmbeddingsResource
from gateway.resources.health import HealthResource, MetricsResource, ReadyResource
from gateway.resources.models import ModelResource, ModelsResource

__all__ = [
    "ChatResource",
    "EmbeddingsResource",
    "HealthResource",
    "MetricsResource",
    "ModelResource",
    "ModelsResource",
    "ReadyResource",
]
