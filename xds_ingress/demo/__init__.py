"""The local demo: gRPC greeter backends that `xds-ingress demo` and the tests run."""
