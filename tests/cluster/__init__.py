"""A real, Docker-free Kubernetes control plane for sigrun's tests.

Why: the operator and the runner talk to Kubernetes, and fakes of the API drift from what a real
API server does (validation, RBAC, status subresources, controllers, scheduling). This package
starts the real binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), in the
style of controller-runtime's envtest, from the cache that ``scripts/build-control-plane`` fills.

- ``controlplane``: start/stop a cluster, PKI, kubeconfigs, a tiny REST client.
- ``agent``: the stand-in for a kubelet that keeps the one test Node alive.
- ``fixture``: the pytest fixtures ``cluster`` and ``namespace``.
- ``python -m tests.cluster up|down|env``: the same cluster by hand.
"""
