import pytest

from qru.config import (ConfigError, CorpusConfig, RunConfig, UnlearnConfig, config_key, run_config_from_dict,
                        to_dict)
from qru.quant.spec import QuantSpec


@pytest.mark.parametrize("kwargs, needle", [
    ({"method": "sgd"}, "'sgd'"),
    ({"regularizer": "l2"}, "'l2'"),
    ({"adapter": "qlora"}, "'qlora'"),
    ({"lr": -0.1}, "-0.1"),
    ({"lr": 0}, "lr"),
    ({"epochs": 0}, "epochs"),
])
def test_unlearn_config_rejects_bad_values_by_name(kwargs, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        UnlearnConfig(**kwargs)


def test_bit_width_5_is_rejected():
    with pytest.raises(ConfigError, match="5"):
        RunConfig(bits=(32, 5))
    with pytest.raises(ConfigError, match="5"):
        QuantSpec(bits=5)


def test_quant_type_must_fit_bits():
    with pytest.raises(ConfigError, match="nf4"):
        QuantSpec(bits=8, quant_type="nf4")
    assert QuantSpec.for_bits(4, "nf4").quant_type == "nf4"
    assert QuantSpec.for_bits(8).quant_type == "int8"


def test_bits_are_sorted_and_key_is_stable():
    a = RunConfig(bits=(4, 32, 8))
    b = RunConfig(bits=(32, 8, 4))
    assert a.bits == (32, 8, 4) and config_key(a) == config_key(b)
    assert config_key(a) != config_key(RunConfig(seed=1))


def test_run_config_round_trip_and_unknown_field():
    cfg = RunConfig(corpus=CorpusConfig(n_forget=3), unlearn=UnlearnConfig(method="npo", adapter="lora"), bits=(4,))
    assert run_config_from_dict(to_dict(cfg)) == cfg
    data = to_dict(cfg)
    data["unlearn"]["momentum"] = 0.9
    with pytest.raises(ConfigError, match="momentum"):
        run_config_from_dict(data)


@pytest.mark.parametrize("kwargs", [{"lr": float("inf")}, {"lr": float("nan")}, {"alpha": float("inf")},
                                    {"beta": float("inf")}, {"lora_dropout": float("nan")}])
def test_non_finite_values_are_rejected(kwargs):
    with pytest.raises(ConfigError, match=list(kwargs)[0]):
        UnlearnConfig(**kwargs)


def test_label_names_the_step_cap_corpus_and_model():
    label = RunConfig(unlearn=UnlearnConfig(max_steps=2)).label
    assert "max 2 steps" in label and "[embedded, d256x4]" in label


def test_run_ids_stored_before_the_rtn_fields_stay_valid():
    # keys computed with the code before RunConfig had quantizer / group_size / symmetric
    assert config_key(RunConfig()) == "9fbcf2e2f70a"
    lora = RunConfig(bits=(32, 4), quant_type_4bit="nf4", unlearn=UnlearnConfig(adapter="lora"))
    assert config_key(lora) == "a3fd31df2c9e"
    assert config_key(RunConfig(quantizer="rtn", bits=(32, 4))) != config_key(RunConfig(bits=(32, 4)))


def test_rtn_runs_and_quantizer_keys():
    config = RunConfig(quantizer="rtn", bits=(32, 3, 8), group_size=32, symmetric=True)
    assert config.bits == (32, 8, 3)
    assert [s.key for s in config.quant_specs()] == ["none@32", "rtn-sym-g32@8", "rtn-sym-g32@3"]
    assert "RTN sym g32" in config.label
    for bad, needle in (({"quantizer": "rtn", "bits": (1,)}, "1"), ({"bits": (3,)}, "3"),
                        ({"group_size": 32}, "rtn and gptq quantizers only"), ({"quantizer": "awq"}, "awq"),
                        ({"quantizer": "rtn", "group_size": 48}, "48")):
        with pytest.raises(ConfigError, match=needle):
            RunConfig(**bad)
    for spec in (QuantSpec(4, "fp4", 128), QuantSpec(8, "int8"), QuantSpec(2, "rtn-asym", group_size=0), QuantSpec()):
        assert QuantSpec.from_key(spec.key) == spec
    for bad in ("fp4@4", "rtn-asym-g48@3", "nf4-b64@3", "x", "int8@4"):
        with pytest.raises(ConfigError):
            QuantSpec.from_key(bad)
    assert QuantSpec(5, "rtn-asym", group_size=0).label == "5-bit RTN asym per-channel"


def test_deltas_configs_round_trip_and_name_bad_fields():
    from qru.config import DeltasConfig, stored_config_from_dict, to_dict

    config = DeltasConfig("/a", "/b", "f00", ("none@32", "fp4-b64@4"))
    assert stored_config_from_dict(to_dict(config)) == config
    with pytest.raises(ConfigError, match="fp9"):
        DeltasConfig("/a", "/b", "f00", ("fp9@4",))
    with pytest.raises(ConfigError, match="unknown field"):
        stored_config_from_dict({**to_dict(config), "extra": 1})


def test_rtn_and_bitsandbytes_options_do_not_mix():
    from qru.cli import configs_for

    with pytest.raises(ConfigError, match="rtn and gptq only"):
        configs_for(["run", "--group-size", "64"])
    with pytest.raises(ConfigError, match="bitsandbytes quantizer only"):
        configs_for(["run", "--quantizer", "rtn", "--quant-type", "nf4"])
    with pytest.raises(ConfigError, match="integer"):
        RunConfig(quantizer="rtn", group_size=False)
    with pytest.raises(ConfigError, match="integer"):
        RunConfig(bits=(32.0, 4))
    assert configs_for(["run", "--quantizer", "rtn"])[0].quant_specs()[-1].key == "rtn-asym-g128@4"


@pytest.mark.parametrize("kwargs, needle", [
    ({"lr": 1e308}, r"lr must be a number in \(0, 1\], got 1e\+308"),
    ({"lr": 1.5}, r"lr must be a number in \(0, 1\], got 1.5"),
    ({"epochs": 10**12}, r"epochs must be an integer in \[1, 10000\], got 1000000000000"),
    ({"batch_size": 4097}, r"batch_size must be an integer in \[1, 4096\], got 4097"),
    ({"max_steps": 10**7 + 1}, r"max_steps must be an integer in \[0, 10000000\], got 10000001"),
    ({"alpha": 1e7}, r"alpha must be a number in \[0, 1e\+06\], got 10000000.0"),
    ({"lora_r": 4097}, r"lora_r must be an integer in \[1, 4096\], got 4097"),
    ({"lora_alpha": 10**6}, r"lora_alpha must be an integer in \[1, 65536\], got 1000000"),
    ({"method": "npo", "beta": 1e4}, r"beta must be a number in \(0, 1000\], got 10000.0"),
    ({"method": "simnpo", "beta": 1e4}, r"beta must be a number in \(0, 1000\], got 10000.0"),
    ({"method": "simnpo", "gamma": 1e4}, r"gamma \(the SimNPO margin\) must be a number in \[-1000, 1000\], got 10000"),
    ({"method": "simnpo", "gamma": -1e4}, r"must be a number in \[-1000, 1000\], got -10000"),
    ({"method": "rmu", "regularizer": "none", "rmu_coeff": 1e5},
     r"RMU steering coefficient must be a number in \(0, 10000\], got 100000"),
])
def test_hyper_parameters_are_bounded_by_name_value_and_range(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        UnlearnConfig(**kwargs)


def test_the_bounds_themselves_are_allowed():
    UnlearnConfig(lr=1.0, epochs=10_000, batch_size=4096, max_steps=10_000_000, alpha=1e6, lora_r=4096,
                  lora_alpha=65536)
    UnlearnConfig(method="simnpo", beta=1e3, gamma=-1e3)
    UnlearnConfig(method="rmu", regularizer="none", rmu_coeff=1e4)


@pytest.mark.parametrize("kwargs, needle", [
    ({"epochs": 10**9}, r"model epochs must be an integer in \[1, 10000\], got 1000000000"),
    ({"lr": 10.0}, r"model lr must be a number in \(0, 1\], got 10.0"),
    ({"batch_size": 10**5}, r"model batch_size must be an integer in \[1, 4096\], got 100000"),
    ({"finetune_epochs": 10**5}, r"fine-tuning epochs must be an integer in \[1, 10000\], got 100000"),
    ({"finetune_lr": 2.0}, r"fine-tuning lr must be a number in \(0, 1\], got 2.0"),
])
def test_model_recipe_fields_are_bounded(kwargs, needle):
    from qru.config import ModelConfig

    with pytest.raises(ConfigError, match=needle):
        ModelConfig(**kwargs)
    ModelConfig(epochs=10_000, lr=1.0, batch_size=4096, finetune_epochs=10_000, finetune_lr=1.0)


def test_a_param_maximum_is_checked_with_its_range():
    from qru.unlearn.methods.base import Param

    assert Param("x", 1.0, "h", maximum=2.0).check(2.0) == ""
    assert Param("x", 1.0, "h", maximum=2.0, positive=True).check(2.5) == "x must be a number in (0, 2], got 2.5"
    assert Param("x", 1, "h", minimum=-1, maximum=8, integer=True).check(9) == "x must be an integer in [-1, 8], got 9"
    assert Param("x", 1.0, "h", positive=True).check(-1) == "x must be a finite number > 0, got -1"  # unchanged
