#!/usr/bin/env python3
"""Writes crates/poc-chain/tests/fixtures/reference_params.hex: a MsgUpdateParams encoded
by Google's protobuf runtime from params.proto (the reference's field numbers), with
mainnet-like values and the sections this chain does not interpret filled in, so the
test can check we read every field where the reference puts it and carry the rest
through byte for byte.

    pip install grpcio-tools protobuf
    python3 scripts/wire/make_params_fixture.py
"""
import importlib
import pathlib
import sys
import tempfile

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent.parent / "crates/poc-chain/tests/fixtures/reference_params.hex"


def main():
    with tempfile.TemporaryDirectory() as d:
        rc = protoc.main(["protoc", f"-I{HERE}", f"--python_out={d}", str(HERE / "params.proto")])
        if rc != 0:
            sys.exit(f"protoc failed ({rc})")
        sys.path.insert(0, d)
        pb = importlib.import_module("params_pb2")

    def dec(v, e):
        return pb.Decimal(value=v, exponent=e)

    p = pb.Params()
    e = p.epoch_params
    e.epoch_length = 17280
    e.epoch_multiplier = 1
    e.default_unit_of_compute_price = 100
    e.poc_stage_duration = 60
    e.poc_exchange_duration = 0
    e.poc_validation_delay = 2
    e.poc_validation_duration = 20
    e.set_new_validators_delay = 1
    e.inference_validation_cutoff = 20
    e.inference_pruning_epoch_threshold = 2
    e.poc_slot_allocation.CopyFrom(dec(5, -1))
    e.confirmation_poc_safety_window = 7
    v = p.validation_params
    v.false_positive_rate.CopyFrom(dec(5, -2))
    v.min_ramp_up_measurements = 10
    v.expiration_blocks = 20
    v.binom_test_p0.CopyFrom(dec(1, -1))
    v.logprobs_mode = "processed_logprobs"
    pp = p.poc_params
    pp.default_difficulty = 5
    pp.validation_sample_size = 200
    pp.poc_data_pruning_epoch_threshold = 1
    pp.weight_scale_factor.CopyFrom(dec(3593, -4))
    pp.model_params.dim = 1792
    pp.model_params.n_layers = 64
    pp.model_params.seq_len = 256
    pp.model_params.r_target.CopyFrom(dec(1398077, -6))
    pp.model_id = "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8"
    pp.seq_len = 1024
    pp.poc_v2_enabled = True
    pp.confirmation_poc_v2_enabled = True
    pp.stat_test.dist_threshold.CopyFrom(dec(2, -1))
    pp.stat_test.p_mismatch.CopyFrom(dec(1, -1))
    pp.stat_test.p_value_threshold.CopyFrom(dec(5, -2))
    pp.validation_slots = 0
    pp.poc_normalization_enabled = True
    p.tokenomics_params.subsidy_reduction_interval.CopyFrom(dec(5, -2))
    p.tokenomics_params.work_vesting_period = 180
    p.collateral_params.slash_fraction_invalid.CopyFrom(dec(2, -1))
    p.collateral_params.grace_period_end_epoch = 180
    c = p.confirmation_poc_params
    c.expected_confirmations_per_epoch = 1
    c.alpha_threshold.CopyFrom(dec(5, -1))
    c.slash_fraction.CopyFrom(dec(1, -1))
    c.upgrade_protection_window = 500
    g = p.genesis_guardian_params
    g.network_maturity_threshold = 10000000
    g.network_maturity_min_height = 3000000
    g.guardian_addresses.append("gonkavaloper1qqqsyqcyq5rqwzqfpg9scrgwpugpzysn0r8rpk")
    p.developer_access_params.until_block_height = 2222222
    p.developer_access_params.allowed_developer_addresses.append(
        "gonka1qqqsyqcyq5rqwzqfpg9scrgwpugpzysnnrkykm")
    a = p.participant_access_params
    a.new_participant_registration_start_height = 12
    a.blocked_participant_addresses.append("gonka1qgpqyqszqgpqyqszqgpqyqszqgpqyqsznzq9pg")
    a.use_participant_allowlist = True
    a.participant_allowlist_until_block_height = 4000000

    msg = pb.MsgUpdateParams(authority="gonka10dahk7mm0dahk7mm0dahk7mm0dahk7mmz9m0f7", params=p)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(msg.SerializeToString().hex() + "\n")
    print(f"wrote {OUT} ({msg.ByteSize()} bytes)")


if __name__ == "__main__":
    main()
