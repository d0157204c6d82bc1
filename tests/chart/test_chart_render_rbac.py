"""The Helm chart's RBAC and queue access, rendered by our helm (`helm template`): the
operator's least privilege in cluster and namespaced mode, pod rights only in worker
namespaces, the leader-election Role, the queue grants of each pool and the policy that
keeps the operator's pods/status writes to the deletion-cost annotation."""

from __future__ import annotations

from typing import Any

from chart_helpers import by_kind, one

# ----------------------------------------------------------------- RBAC

FORBIDDEN_RESOURCES = {"secrets", "configmaps", "serviceaccounts", "*", "pods/exec",
                       "clusterroles", "roles", "rolebindings", "clusterrolebindings"}


def rules_of(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for o in by_kind(objs, kind) for r in o["rules"]]


def grants(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               for r in rules)


def assert_least_privilege(rules: list[dict[str, Any]]) -> None:
    for r in rules:
        assert "*" not in r["verbs"] and "*" not in r["apiGroups"], r
        assert not FORBIDDEN_RESOURCES & set(r["resources"]), r
        assert "escalate" not in r["verbs"] and "bind" not in r["verbs"], r
    assert not grants(rules, "", "pods", "delete")
    assert not grants(rules, "", "pods", "create")
    # the pod-deletion-cost annotation goes through pods/status, which keeps the spec
    for verb in ("patch", "update"):
        assert not grants(rules, "", "pods", verb)
    assert not grants(rules, "apps", "deployments", "patch")  # scale subresource only
    assert not grants(rules, "apps", "deployments", "delete")
    for verb in ("create", "patch", "delete", "update"):
        assert not grants(rules, "autoscaling", "horizontalpodautoscalers", verb)
        assert not grants(rules, "keda.sh", "scaledobjects", verb)
        assert not grants(rules, "apiextensions.k8s.io", "customresourcedefinitions", verb)


def assert_operator_needs(rules: list[dict[str, Any]]) -> None:
    for verb in ("get", "list", "watch", "patch", "create", "delete"):
        assert grants(rules, "podq.dev", "jobs", verb), verb
    for verb in ("get", "list", "watch", "patch"):
        assert grants(rules, "podq.dev", "cronjobs", verb), verb
    assert grants(rules, "podq.dev", "jobs/status", "patch")
    assert grants(rules, "podq.dev", "cronjobs/status", "patch")
    # blockOwnerDeletion on CronJob children needs update on the owner's finalizers
    assert grants(rules, "podq.dev", "cronjobs/finalizers", "update")
    assert grants(rules, "", "events", "create")
    assert grants(rules, "events.k8s.io", "events", "create")
    for verb in ("get", "list", "watch"):
        assert grants(rules, "apps", "deployments", verb)
    # nothing on pods or scale where Jobs are: that is the worker namespaces' Role
    assert not grants(rules, "apps", "deployments/scale", "patch")
    assert not [r for r in rules if {"pods", "pods/status"} & set(r["resources"])]


def assert_worker_rules(rules: list[dict[str, Any]]) -> None:
    assert grants(rules, "apps", "deployments/scale", "patch")
    assert grants(rules, "", "pods", "list") and grants(rules, "", "pods/status", "patch")
    assert grants(rules, "autoscaling", "horizontalpodautoscalers", "list")
    assert grants(rules, "keda.sh", "scaledobjects", "list")
    assert not grants(rules, "podq.dev", "jobs", "list")


LEADER_ELECTION_ROLE = "podq-operator-leader-election"
WORKERS_ROLE = "podq-operator-workers"


def without_leader_election(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["metadata"]["name"] not in (LEADER_ELECTION_ROLE, WORKERS_ROLE)]


def test_pod_rights_only_in_worker_namespaces(render) -> None:
    objs = render()
    (role,) = [r for r in by_kind(objs, "Role") if r["metadata"]["name"] == WORKERS_ROLE]
    assert role["metadata"]["namespace"] == "podq-system"
    assert_worker_rules(role["rules"])
    assert_least_privilege(role["rules"])
    (binding,) = [b for b in by_kind(objs, "RoleBinding")
                  if b["metadata"]["name"] == WORKERS_ROLE]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "podq-operator", "namespace": "podq-system"}]
    # more worker namespaces by value; none at all without a pool
    objs = render({"operator": {"workerNamespaces": ["batch", "podq-system"]}})
    assert sorted(r["metadata"]["namespace"] for r in by_kind(objs, "Role")
                  if r["metadata"]["name"] == WORKERS_ROLE) == ["batch", "podq-system"]
    objs = render({"workers": {"enabled": False}})
    assert not [r for r in by_kind(objs, "Role") if r["metadata"]["name"] == WORKERS_ROLE]
    # namespaced mode: only where the operator watches, the only place it sees pools
    objs = render({"operator": {"watchNamespaces": ["team-a", "batch"],
                                "workerNamespaces": ["batch", "elsewhere"]}})
    assert [r["metadata"]["namespace"] for r in by_kind(objs, "Role")
            if r["metadata"]["name"] == WORKERS_ROLE] == ["batch"]


def test_leader_election_role_grants_the_lease_only(render) -> None:
    objs = render()
    role = one(objs, "Role", LEADER_ELECTION_ROLE)
    assert role["metadata"]["namespace"] == "podq-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["podq-operator"], "verbs": ["get", "update"]}]
    binding = one(objs, "RoleBinding", LEADER_ELECTION_ROLE)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "podq-operator", "namespace": "podq-system"}]


def test_without_leader_election_one_replica_recreated(render) -> None:
    objs = render({"operator": {"replicas": 1, "leaderElection": {"enabled": False}}})
    operator = one(objs, "Deployment", "podq-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [o for o in by_kind(objs, "Role") if o["metadata"]["name"] == LEADER_ELECTION_ROLE]


def test_rbac_cluster_mode(render) -> None:
    objs = without_leader_election(render())
    assert not by_kind(objs, "Role") and not by_kind(objs, "RoleBinding")
    rules = rules_of(objs, "ClusterRole")
    assert_operator_needs(rules)
    assert_least_privilege(rules)
    assert grants(rules, "apiextensions.k8s.io", "customresourcedefinitions", "watch")
    assert grants(rules, "", "namespaces", "watch")
    for binding in by_kind(objs, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "podq-operator", "namespace": "podq-system"}
        ]
        assert binding["roleRef"]["name"] in {o["metadata"]["name"]
                                              for o in by_kind(objs, "ClusterRole")}


def test_rbac_namespaced_mode_uses_roles_in_listed_namespaces_only(render) -> None:
    objs = render({"operator": {"watchNamespaces": ["team-a", "team-b"]}})
    (operator,) = [d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith(
        "-operator")]
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args

    objs = without_leader_election(objs)
    roles = by_kind(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = by_kind(objs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for b in bindings:
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                "name": "podq-operator"}
        assert b["subjects"][0]["namespace"] == "podq-system"
    for role in roles:
        assert_operator_needs(role["rules"])
        assert_least_privilege(role["rules"])

    # cluster-wide: only what kopf needs to see its CRDs, nothing about namespaces or jobs
    cluster_rules = rules_of(objs, "ClusterRole")
    assert cluster_rules == [{"apiGroups": ["apiextensions.k8s.io"],
                              "resources": ["customresourcedefinitions"],
                              "verbs": ["list", "watch"]}]


def test_rbac_can_be_left_to_the_user(render) -> None:
    objs = render({"operator": {"rbac": {"create": False}, "serviceAccount": {
        "create": False, "name": "my-operator"}}})
    assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding", "ClusterRole",
                                                 "ClusterRoleBinding")]
    operator = one(objs, "Deployment", "podq-operator")
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "my-operator"
    assert "podq-operator" not in {o["metadata"]["name"] for o in by_kind(objs, "ServiceAccount")}


# ----------------------------------------------------------------- queue access


def operator_args(objs: list[dict[str, Any]]) -> list[str]:
    return one(objs, "Deployment", "podq-operator")["spec"]["template"]["spec"][
        "containers"][0]["args"]


def test_each_pool_grants_its_queue_to_its_namespaces(render) -> None:
    # by default the release namespace only, explicitly
    args = operator_args(render())
    assert "--queue-access=explicit" in args
    assert [a for a in args if a.startswith("--allow-queue")] == [
        "--allow-queue=default=podq-system"]
    args = operator_args(render({
        "workers": {"namespaces": ["team-a"],
                    "pools": [{"name": "emails", "namespaces": ["team-b", "team-c"]},
                              {"name": "reports"},  # inherits team-a
                              {"name": "more-emails", "queue": "emails",
                               "namespaces": ["team-a"]}]},
        "operator": {"queueAccess": {"grants": {"ext": ["*"], "emails": ["team-d"]}}}}))
    assert sorted(a for a in args if a.startswith("--allow-queue")) == [
        "--allow-queue=default=team-a",
        "--allow-queue=emails=team-b,team-c,team-a,team-d",
        "--allow-queue=ext=*",
        "--allow-queue=reports=team-a"]
    assert "--queue-access=open" in operator_args(render({"operator": {"queueAccess": {
        "mode": "open"}}}))


def test_queue_access_values_are_checked(render_error) -> None:
    assert "mode" in render_error({"operator": {"queueAccess": {"mode": "closed"}}})
    assert "namespaces" in render_error({"workers": {"namespaces": ["Not_A_Namespace"]}})


def test_pod_status_policy_limits_the_operator_to_the_cost_annotation(render) -> None:
    objs = render()
    (policy,) = by_kind(objs, "ValidatingAdmissionPolicy")
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == [
        "pods/status"]
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:podq-system:podq-operator'")
    (binding,) = by_kind(objs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"],
                               "validationActions": ["Deny"]}
    for values in ({"operator": {"rbac": {"podStatusPolicy": False}}},
                   {"operator": {"rbac": {"create": False}}}):
        assert not by_kind(render(values), "ValidatingAdmissionPolicy")
