"""PerspectiveVision (reference/unsafebench.md §5, DESIGN §7).

trainset   the paper's training-set builder (prompt template, negative sampling, oversampling)
lora       LoRA fine-tuning of LLaVA-1.5 through peft; loading adapters (ours and the authors')
evaluate   the answer parse rule, the judge, the pooled F1 over evaluation datasets
fast       ubsafe's fast variant: per-category probes on cached embeddings (seconds on a CPU)
"""
