from rayfleet.bench.baselines import (
    _engine,
    median_headlines,
    ratio_rows,
    stock_serve_config,
    vllm_cli_args,
)
from rayfleet.platform.plan import resolve
from rayfleet.platform.spec import default_spec_path, load_spec


def test_bare_vllm_gets_the_same_engine_flags():
    config = _engine(resolve(load_spec(default_spec_path())))
    flags = vllm_cli_args(config)
    assert flags[flags.index("--dtype") + 1] == "float32"
    assert "--enforce-eager" in flags and "--enable-prefix-caching" in flags
    assert flags[flags.index("--max-model-len") + 1] == "2048"
    assert config["model_loading_config"]["model_source"].endswith("seed0")


def test_stock_config_differs_only_by_rayfleet_s_classes():
    plan = resolve(load_spec(default_spec_path()))
    config = _engine(plan)
    stock = stock_serve_config(plan, config)
    app = stock["applications"][0]
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    (llm_config,) = app["args"]["llm_configs"]
    assert "server_cls" not in llm_config and "callback_config" not in llm_config
    assert llm_config["engine_kwargs"] == config["engine_kwargs"]
    assert llm_config["runtime_env"]["env_vars"]["VLLM_CPU_OMP_THREADS_BIND"] == "0"


def test_ratio_rows():
    results = {
        "vllm": {
            "cold_start_s": 20,
            "ttft_p50_s": 0.010,
            "ttft_p90_s": 0.02,
            "tpot_p50_s": 0.002,
            "e2e_p50_s": 0.1,
        },
        "rayfleet": {
            "cold_start_s": 60,
            "ttft_p50_s": 0.012,
            "ttft_p90_s": 0.03,
            "tpot_p50_s": 0.003,
            "e2e_p50_s": 0.2,
        },
    }
    rows = {row[0]: row for row in ratio_rows(results, "vllm")}
    assert rows["ttft_p50_s"] == ("ttft_p50_s", "10.0 ms", "12.0 ms", "1.00×", "1.20×")
    assert rows["cold_start_s"][1:3] == ("20.0", "60.0")


def test_rounds_are_summarised_by_their_medians():
    def round_of(vllm_ttft, rayfleet_ttft):
        return {
            "vllm": {"ttft_p50_s": vllm_ttft, "cold_start_s": 20.0},
            "rayfleet": {"ttft_p50_s": rayfleet_ttft, "cold_start_s": 50.0},
        }

    rounds = [round_of(0.010, 0.030), round_of(0.012, 0.011), round_of(0.011, 0.013)]
    medians = median_headlines(rounds)
    assert medians["vllm"]["ttft_p50_s"] == 0.011
    assert medians["rayfleet"]["ttft_p50_s"] == 0.013  # the 30 ms outlier round drops out
    assert medians["rayfleet"]["cold_start_s"] == 50.0
    assert median_headlines([]) == {}


def test_a_round_without_successes_is_left_out_and_shown_as_missing():
    rounds = [
        {"vllm": {"ttft_p50_s": 0.010}, "rayfleet": {"ttft_p50_s": None}},
        {"vllm": {"ttft_p50_s": 0.012}, "rayfleet": {"ttft_p50_s": 0.011}},
    ]
    assert median_headlines(rounds)["rayfleet"]["ttft_p50_s"] == 0.011
    failed = {"vllm": {"ttft_p50_s": None}, "rayfleet": {"ttft_p50_s": None}}
    assert median_headlines([failed])["rayfleet"]["ttft_p50_s"] is None
    metrics = ("cold_start_s", "ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "e2e_p50_s")
    results = {
        "vllm": dict.fromkeys(metrics, 0.01),
        "rayfleet": {**dict.fromkeys(metrics, 0.02), "ttft_p50_s": None},
    }
    rows = {row[0]: row for row in ratio_rows(results, "vllm")}
    assert rows["ttft_p50_s"] == ("ttft_p50_s", "10.0 ms", "-", "1.00×", "-")
    assert rows["tpot_p50_s"][-1] == "2.00×"
