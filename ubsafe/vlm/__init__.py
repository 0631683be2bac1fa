"""The judge library: vision-language judges, their prompts and decision, GPT-4V replay and client.

Nothing heavy is imported here; each module imports torch/transformers itself when used.

    prompts        the paper's prompts and category definition lines (data files in texts/)
    decision       VLMDecision, majority vote, the seeded tie-break
    converter      response → safe/unsafe/unsure: the authors' RoBERTa converter, rule fallback
    judge          VLMJudge (decide_images) and the shared transformers machinery
    llava          LLaVA-1.5 (llava-hf)           instructblip   InstructBLIP (transformers)
    replay         the authors' published responses, joined by sample id
    openai_client  OpenAI-compatible chat client: rate limit, retries, on-disk cache; GPT-4V judge
    registry       weight files of every judge
    load           LOADERS: a judge's model by its registry entry's `[judge] loader`

In the pipeline:
    classifier     the judges as registry classifiers (`llava`, `instructblip`, `gpt4v`,
                   `perspective-llava`): what the score and compare stages load
    responses      the answers kept beside each score shard (`shard-NNNNN.responses.parquet`)

Elsewhere: attacks on judges (`ubsafe.attacks.judge`, `judge_rows`), PerspectiveVision
(`ubsafe.perspective`; its fast variant `ubsafe.classifiers.perspective_fast`), the pooled F1
(`ubsafe.report.pooled_f1`), tiny stand-in models (`ubsafe.testing.tiny`).
"""
