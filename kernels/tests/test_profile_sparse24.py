"""The harness's report on 2:4 matters: each FFN block with the tokens and dtype it ran with (for the
editor's speed advice), and the 2:4 layers' mask flip rates (for the report view's chart)."""


from test_profile import GPT, assert_valid, line_of, run_harness

ARGS = ["--batch-size", "3", "--seq-len", "16", "--n-layer", "2", "--n-embd", "32", "--n-head", "2", "--device", "cpu"]


def test_ffn_blocks_are_reported_with_their_tokens_and_where_they_were_built(tmp_path):
    proc, rep = run_harness(tmp_path, "samples/gpt_tiny.py", ["--steps", "10", *ARGS], "--steps", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_valid(rep)
    ffn = rep["ffn"]
    assert [f["module"] for f in ffn] == ["h.0.mlp", "h.1.mlp"]
    built = line_of(GPT, "self.mlp = MLP(config)")
    for f in ffn:
        # The sample's MLP is n_embd -> 4 n_embd; every token of the batch goes through it.
        assert (f["d_model"], f["d_ff"], f["gated"]) == (32, 128, False)
        assert f["tokens"] == 3 * 16 and f["dtype"] == "float32" and f["converted"] is False
        assert f["created_at"] == {"file": "samples/gpt_tiny.py", "line": built}
    assert "flip_rate" not in rep  # no 2:4 layers in the baseline


def test_sparse24_variant_reports_converted_ffns_and_flip_rates(tmp_path):
    # 41 training forwards: the mask refresh every 40 steps happens once per layer.
    proc, rep = run_harness(tmp_path, "samples/gpt_tiny.py", ["--steps", "60", *ARGS], "--variant", "sparse24",
                            "--warmup", "40", "--steps", "2", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_valid(rep)
    assert all(f["converted"] for f in rep["ffn"]) and len(rep["ffn"]) == 2
    flips = rep["flip_rate"]
    assert flips["step"] == [40]
    assert sorted(flips["layers"]) == ["h.0.mlp.c_fc", "h.0.mlp.c_proj", "h.1.mlp.c_fc", "h.1.mlp.c_proj"]
    for rates in flips["layers"].values():
        assert len(rates) == 1 and 0.0 <= rates[0] <= 1.0
    # After 40 AdamW steps from a random start the masks have moved.
    assert sum(r[0] for r in flips["layers"].values()) > 0
