"""Generated from protos/xds_ingress/demo/v1 by scripts/gen_protos.py (`make protos`)."""
