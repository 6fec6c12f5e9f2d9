"""The search-space text: ranges, log ranges, steps, choices, fixed values, and every
malformed entry refused with a message naming it."""

import pytest

from dualnet.sweep.space import (
    Choice,
    Range,
    SpaceError,
    format_dimension,
    parse_dimension,
    parse_space,
)


@pytest.mark.parametrize("text, expected", [
    ("1e-4:1e-2:log", Range(1e-4, 1e-2, log=True)),
    ("0:1e-2", Range(0, 1e-2)),
    ("50:500:50", Range(50, 500, step=50, integer=True)),
    ("8:64:log", Range(8, 64, log=True, integer=True)),
    ("0.5:1:0.1", Range(0.5, 1, step=0.1)),
    ("100,200", Choice((100, 200))),
    ("sgd, adam", Choice(("sgd", "adam"))),
    ("none,batchnorm", Choice((None, "batchnorm"))),
    ("0.5,1", Choice((0.5, 1))),
    ("sgd_momentum", "sgd_momentum"),
    ("3e-3", 3e-3),
    ("64", 64),
])
def test_each_form_of_entry(text, expected):
    assert parse_dimension(text) == expected


def test_parse_space_splits_searched_from_fixed_in_order():
    space, fixed = parse_space(["lr=1e-4:1e-2:log", "optimizer=adam", "hidden=100,200"])
    assert list(space) == ["lr", "hidden"]
    assert space["lr"] == Range(1e-4, 1e-2, log=True)
    assert fixed == {"optimizer": "adam"}


def test_a_mapping_takes_text_lists_and_objects():
    space, fixed = parse_space({"lr": "1e-3:1e-1:log", "hidden": [64, 128],
                                "reg": Range(0.0, 0.1), "batch_size": 32})
    assert space == {"lr": Range(1e-3, 1e-1, log=True), "hidden": Choice((64, 128)),
                     "reg": Range(0.0, 0.1)}
    assert fixed == {"batch_size": 32}


def test_real_valued_names_stay_real_with_integer_bounds():
    space, _ = parse_space(["reg=0:1", "dropout_keep_ratio=0:1", "hidden=1:3"])
    assert not space["reg"].integer and not space["dropout_keep_ratio"].integer
    assert space["hidden"].integer


class FakeTrial:
    """Records what a Range or Choice asks for, answering the low end."""

    def __init__(self):
        self.asked = []

    def suggest_float(self, name, low, high, step=None, log=False):
        self.asked.append(("float", name, low, high, step, log))
        return low

    def suggest_int(self, name, low, high, step=1, log=False):
        self.asked.append(("int", name, low, high, step, log))
        return low

    def suggest_categorical(self, name, choices):
        self.asked.append(("categorical", name, choices))
        return choices[0]


def test_dimensions_ask_the_trial_for_the_right_kind():
    trial = FakeTrial()
    Range(1e-4, 1e-2, log=True).suggest(trial, "lr")
    Range(50, 500, step=50, integer=True).suggest(trial, "hidden")
    Choice(("sgd", "adam")).suggest(trial, "optimizer")
    assert trial.asked == [("float", "lr", 1e-4, 1e-2, None, True),
                           ("int", "hidden", 50, 500, 50, False),
                           ("categorical", "optimizer", ["sgd", "adam"])]


@pytest.mark.parametrize("text", ["1e-4:1e-2:log", "0:0.01", "50:500:50", "8:64:log",
                                  "100,200", "none,batchnorm,layernorm", "adam", "0.5:1:0.1"])
def test_format_reads_back(text):
    dim = parse_dimension(text)
    assert parse_dimension(format_dimension(dim)) == dim


@pytest.mark.parametrize("entry, words", [
    ("lr", "has no '='"),
    ("lr=", "has no value"),
    ("lr=1e-4:", "not a number"),
    ("lr=a:b", "the low bound 'a' is not a number"),
    ("lr=1e-2:1e-4", "low bound must be below"),
    ("lr=1:1", "low bound must be below"),
    ("lr=0:1e-2:log", "log range needs a low bound > 0"),
    ("hidden=10:20:0", "step must be > 0"),
    ("hidden=10:20:50", "step must be > 0 and at most"),
    ("lr=1:2:3:4", "3 colons"),
    ("hidden=100,,200", "empty choice"),
    ("hidden=100,100", "lists a value twice"),
    ("2lr=1:2", "must be an identifier"),
    ("my-lr=1:2", "must be an identifier"),
])
def test_malformed_entries_are_named(entry, words):
    with pytest.raises(SpaceError, match="^Sweep: ") as info:
        parse_space([entry])
    assert words in str(info.value)
    assert "\n" not in str(info.value)
    assert not info.value.detail.startswith("Sweep")


def test_a_name_given_twice_is_refused():
    with pytest.raises(SpaceError, match="names 'lr' twice"):
        parse_space(["lr=1e-4:1e-2", "lr=1e-3"])
