"""The control plane's own gRPC API (protos/xds_ingress/admin), served by server/admin.py."""
