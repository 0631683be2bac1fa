"""Vision-language judges, GPT-4V replay and client, and PerspectiveVision.

Nothing heavy is imported here; each module imports torch/transformers itself when used.

    prompts        the paper's prompts and category definition lines (data files in texts/)
    decision       VLMDecision, majority vote, the seeded tie-break
    converter      response → safe/unsafe/unsure: the authors' RoBERTa converter, rule fallback
    judge          VLMJudge (decide_images) and the shared transformers machinery
    llava          LLaVA-1.5 (llava-hf)           instructblip   InstructBLIP (transformers)
    replay         the authors' published responses, joined by sample id
    openai_client  OpenAI-compatible chat client: rate limit, retries, on-disk cache; GPT-4V judge
    attack         targeted PGD against a judge (target answer "safe"/"unsafe")
    perspective/   PerspectiveVision: training set, LoRA fine-tuning, evaluation, fast variant
    registry       weight files of every judge          tiny   tiny random stand-ins (tests)

In the pipeline:
    classifier     the judges as registry classifiers (`llava`, `instructblip`, `gpt4v`,
                   `perspective-llava`): what the score and compare stages load
    responses      the answers kept beside each score shard (`shard-NNNNN.responses.parquet`)
    robustness     targeted attacks on a run's judges, as compare-stage rows
"""
