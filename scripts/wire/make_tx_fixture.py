#!/usr/bin/env python3
"""Writes crates/poc-chain/tests/fixtures/reference_tx.txt with transactions made by
implementations we did not write: the Cosmos SDK's protobuf definitions as cosmpy ships
them, Google's protobuf runtime, and cosmpy's secp256k1 signing (python-ecdsa, RFC 6979
deterministic nonces, low S).

Lines (`name hex`):
  store_commit_msg  MsgPoCV2StoreCommit (scripts/wire/poc.proto) bytes
  grant_tx          a TxRaw with two MsgGrant (GenericAuthorization), SIGN_MODE_DIRECT,
                    signed by sha256("participant-0") for chain "poc-test", account 0,
                    sequence 0, fee {gas_limit 2000000}

    pip install cosmpy grpcio-tools
    python3 scripts/wire/make_tx_fixture.py
"""
import hashlib
import importlib
import pathlib
import sys
import tempfile

from cosmpy.crypto.address import Address
from cosmpy.crypto.keypairs import PrivateKey
from cosmpy.protos.cosmos.authz.v1beta1 import authz_pb2, tx_pb2 as authz_tx
from cosmpy.protos.cosmos.crypto.secp256k1 import keys_pb2
from cosmpy.protos.cosmos.tx.signing.v1beta1 import signing_pb2
from cosmpy.protos.cosmos.tx.v1beta1 import tx_pb2
from google.protobuf import any_pb2
from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent.parent / "crates/poc-chain/tests/fixtures/reference_tx.txt"


def any_of(type_url, msg):
    return any_pb2.Any(type_url=type_url, value=msg.SerializeToString())


def main():
    with tempfile.TemporaryDirectory() as d:
        if protoc.main(["protoc", f"-I{HERE}", f"--python_out={d}", str(HERE / "poc.proto")]) != 0:
            sys.exit("protoc failed")
        sys.path.insert(0, d)
        poc = importlib.import_module("poc_pb2")

    key = PrivateKey(hashlib.sha256(b"participant-0").digest())
    granter = str(Address(key.public_key, prefix="gonka"))
    grantee = str(Address(PrivateKey(hashlib.sha256(b"warm-0").digest()).public_key, prefix="gonka"))

    commit = poc.MsgPoCV2StoreCommit(
        creator=granter, poc_stage_start_block_height=983040, count=1234, root_hash=bytes(range(32)))

    def grant(type_url):
        auth = any_of("/cosmos.authz.v1beta1.GenericAuthorization",
                      authz_pb2.GenericAuthorization(msg=type_url))
        return any_of("/cosmos.authz.v1beta1.MsgGrant",
                      authz_tx.MsgGrant(granter=granter, grantee=grantee,
                                        grant=authz_pb2.Grant(authorization=auth)))

    body = tx_pb2.TxBody(messages=[
        grant("/inference.inference.MsgPoCV2StoreCommit"),
        grant("/inference.inference.MsgMLNodeWeightDistribution"),
    ])
    pub = any_of("/cosmos.crypto.secp256k1.PubKey", keys_pb2.PubKey(key=key.public_key.public_key_bytes))
    signer = tx_pb2.SignerInfo(
        public_key=pub,
        mode_info=tx_pb2.ModeInfo(single=tx_pb2.ModeInfo.Single(mode=signing_pb2.SIGN_MODE_DIRECT)),
        sequence=0)
    auth_info = tx_pb2.AuthInfo(signer_infos=[signer], fee=tx_pb2.Fee(gas_limit=2000000))
    body_bytes = body.SerializeToString()
    auth_bytes = auth_info.SerializeToString()
    doc = tx_pb2.SignDoc(body_bytes=body_bytes, auth_info_bytes=auth_bytes,
                         chain_id="poc-test", account_number=0)
    sig = key.sign(doc.SerializeToString(), deterministic=True, canonicalise=True)
    assert key.public_key.verify(doc.SerializeToString(), sig)
    raw = tx_pb2.TxRaw(body_bytes=body_bytes, auth_info_bytes=auth_bytes, signatures=[sig])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        f"granter {granter}\n"
        f"grantee {grantee}\n"
        f"store_commit_msg {commit.SerializeToString().hex()}\n"
        f"grant_tx {raw.SerializeToString().hex()}\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
