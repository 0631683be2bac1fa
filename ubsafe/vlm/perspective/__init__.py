"""PerspectiveVision (reference/unsafebench.md §5, DESIGN §7).

trainset    the paper's training-set builder (prompt template, negative sampling, oversampling)
lora        LoRA fine-tuning of LLaVA-1.5 through peft; loading adapters (ours and the authors')
evaluate    the answer parse rule, the judge, the pooled F1 over evaluation datasets
pooled      `pooled_over_runs`: that pooled F1 over ubsafe runs (one per evaluation dataset)
fast        ubsafe's fast variant: per-category probes on cached embeddings (seconds on a CPU)
classifier  the fast variant as the registry's fitted classifier `perspective-fast`
"""

from ubsafe.vlm.perspective.pooled import pooled_over_runs

__all__ = ["pooled_over_runs"]
