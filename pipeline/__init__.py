"""Structure-informed DirectBackprop: the core (``pipeline.core``), data, studies, reporting
and the Ray and MLflow adapters."""
from pipeline.allocator import keep_freed_memory

keep_freed_memory()
