"""Generated protobuf and gRPC modules (see proto/ and scripts/gen_proto.py)."""
