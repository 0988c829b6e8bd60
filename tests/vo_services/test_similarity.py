"""Property-based tests of the vector literals the nearest-spectrum ADQL
functions accept (retrspect.vo_services.similarity).
"""
from __future__ import annotations

import math
import re
import struct
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from retrspect.vo_services.similarity import (
    FLOAT32_MAX,
    VectorLiteralError,
    parse_vector_literal,
    vector_sql,
)

set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "retrspect-hypothesis"))

VECTORS = settings(max_examples=300, deadline=timedelta(seconds=1),
                   database=None)


#: a pgvector literal as vector_sql may write it: numbers only
NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"


STRICT_LITERAL = re.compile(rf"'\[(?:{NUMBER}(?:,{NUMBER})*)?\]'::vector\((\d+)\)")


#: what pgvector stores: finite numbers within float32's range
finite_vectors = st.integers(1, 64).flatmap(
    lambda dim: st.lists(st.floats(min_value=-FLOAT32_MAX,
                                   max_value=FLOAT32_MAX),
                         min_size=dim, max_size=dim))


def _same_floats(a, b):
    """Equal bit for bit (so -0.0 differs from 0.0)."""
    return [struct.pack("<d", x) for x in a] == [struct.pack("<d", x) for x in b]


@VECTORS
@given(text=st.one_of(st.text(max_size=300),
                      st.from_regex(r"\[?[-+0-9eE.,\s nainf]{0,200}\]?",
                                    fullmatch=True)),
       dim=st.integers(1, 64))
def test_any_text_is_a_valid_vector_or_a_vector_literal_error(text, dim):
    try:
        values = parse_vector_literal(text, dim)
    except VectorLiteralError:
        return
    assert len(values) == dim
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)


@VECTORS
@given(values=finite_vectors,
       style=st.sampled_from(["[{}]", "{}", " [ {} ] "]),
       separator=st.sampled_from([",", ", ", " ", "\t", " ,\n"]))
def test_valid_vectors_parse_exactly(values, style, separator):
    text = style.format(separator.join(repr(v) for v in values))
    assert _same_floats(parse_vector_literal(text, len(values)), values)


@VECTORS
@given(values=finite_vectors, bad=st.sampled_from(
           ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "x", "1;",
            "'", "--", "0x10", "1)", "[1]"]),
       data=st.data())
def test_a_bad_element_or_wrong_length_is_refused(values, bad, data):
    position = data.draw(st.integers(0, len(values)))
    broken = [repr(v) for v in values]
    broken.insert(position, bad)
    with pytest.raises(VectorLiteralError):
        parse_vector_literal("[" + ",".join(broken) + "]", len(broken))
    with pytest.raises(VectorLiteralError):
        parse_vector_literal("[" + ",".join(map(repr, values)) + "]",
                             len(values) + 1)


def test_injection_attempts_are_refused():
    for text in ["1); DROP TABLE retrspect.ml_results; --",
                 "[1,2]'::vector(2); SELECT pg_sleep(10); --",
                 "1 2 3' OR '1'='1", "[1,2,3]\0", "x" * 30000]:
        with pytest.raises(VectorLiteralError):
            parse_vector_literal(text, 3)


@VECTORS
@given(values=finite_vectors)
def test_vector_sql_is_a_strict_pgvector_literal(values, sql):
    sql = vector_sql(values, len(values))
    match = STRICT_LITERAL.fullmatch(sql)
    assert match, sql
    assert int(match.group(1)) == len(values)
    inner = sql[sql.index("[") : sql.index("]") + 1]
    assert _same_floats(parse_vector_literal(inner, len(values)), values)


@VECTORS
@given(values=st.lists(st.floats(width=32, allow_nan=False,
                                 allow_infinity=False), min_size=1, max_size=64))
def test_vector_sql_of_float32_arrays(values, sql):
    """Model outputs are float32 numpy arrays (search by example)."""
    latent = np.asarray(values, dtype=np.float32)
    sql = vector_sql(latent, latent.size)
    assert STRICT_LITERAL.fullmatch(sql), sql


@VECTORS
@given(values=finite_vectors, bad=st.sampled_from([math.nan, math.inf,
                                                   -math.inf]),
       data=st.data())
def test_vector_sql_refuses_non_finite_values(values, bad, data):
    values = list(values)
    values.insert(data.draw(st.integers(0, len(values))), bad)
    with pytest.raises(ValueError):
        vector_sql(values, len(values))


def test_values_beyond_float32_are_refused():
    with pytest.raises(VectorLiteralError):
        parse_vector_literal("[1e39, 0, 0]", 3)
