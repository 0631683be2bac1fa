"""PerspectiveVision: UnsafeBench's own safety judge (LLaVA-1.5 fine-tuned with LoRA).

trainset    the paper's training-set builder (prompt template, negative sampling, oversampling)
lora        LoRA fine-tuning of LLaVA-1.5 through peft; loading adapters (ours and the authors')
evaluate    the answer parse rule, the judge, the pooled F1 over evaluation datasets

Elsewhere: its fast variant, per-category probes on cached embeddings, is the registry classifier
`perspective-fast` (`ubsafe.classifiers.perspective_fast`, beside the linear probes); the pooled F1
over ubsafe runs (one per evaluation dataset) is `ubsafe.report.pooled_f1.pooled_over_runs`.
"""
