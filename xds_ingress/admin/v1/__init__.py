"""Generated from protos/xds_ingress/admin/v1 by scripts/gen_protos.py (`make protos`)."""
