"""Table tests for manifest parsing: every workload kind, streams, Lists, and the errors CI must see."""

import json
import textwrap

import pytest

from webhook.policy.workloads import ManifestError, find_images, parse_documents


def pod_spec(image="app:1"):
    return {"containers": [{"name": "main", "image": image}]}


def template(image="app:1"):
    return {"template": {"spec": pod_spec(image)}}


@pytest.mark.parametrize(
    ("api_version", "kind", "body", "pointer"),
    [
        ("v1", "Pod", {"spec": pod_spec()}, "/spec/containers/0/image"),
        ("v1", "PodTemplate", template(), "/template/spec/containers/0/image"),
        ("v1", "ReplicationController", {"spec": template()}, "/spec/template/spec/containers/0/image"),
        ("apps/v1", "Deployment", {"spec": template()}, "/spec/template/spec/containers/0/image"),
        ("extensions/v1beta1", "Deployment", {"spec": template()}, "/spec/template/spec/containers/0/image"),
        ("apps/v1", "StatefulSet", {"spec": template()}, "/spec/template/spec/containers/0/image"),
        ("apps/v1", "DaemonSet", {"spec": template()}, "/spec/template/spec/containers/0/image"),
        ("apps/v1", "ReplicaSet", {"spec": template()}, "/spec/template/spec/containers/0/image"),
        ("batch/v1", "Job", {"spec": template()}, "/spec/template/spec/containers/0/image"),
        (
            "batch/v1",
            "CronJob",
            {"spec": {"jobTemplate": {"spec": template()}}},
            "/spec/jobTemplate/spec/template/spec/containers/0/image",
        ),
        (None, "Deployment", {"spec": template()}, "/spec/template/spec/containers/0/image"),
    ],
)
def test_every_workload_kind_yields_its_image(api_version, kind, body, pointer):
    obj = {"kind": kind, "metadata": {"name": "w", "namespace": "ns"}, **body}
    if api_version:
        obj["apiVersion"] = api_version
    inventory = find_images(parse_documents(json.dumps(obj), "m.json", as_json=True))
    assert inventory.workloads == 1 and not inventory.skipped
    [found] = inventory.images
    assert (found.kind, found.namespace, found.name, found.container, found.image) == (kind, "ns", "w", "main", "app:1")
    assert found.pointer == pointer


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [("v1", "Service"), ("v1", "ConfigMap"), ("argoproj.io/v1alpha1", "Deployment"), ("apps/v1", "Pod"), ("v1", "Job")],
)
def test_kinds_without_a_pod_spec_are_counted_and_skipped(api_version, kind):
    inventory = find_images(
        parse_documents(json.dumps({"apiVersion": api_version, "kind": kind, "spec": template()}), "m", True)
    )
    assert inventory.images == [] and inventory.workloads == 0
    assert inventory.skipped == {kind: 1}


def test_containers_are_reported_in_the_walker_order_admission_patches_in():
    spec = {
        "containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}],
        "initContainers": [{"name": "i", "image": "i:1"}],
        "ephemeralContainers": [{"name": "e", "image": "e:1"}],
    }
    inventory = find_images(
        parse_documents(json.dumps({"kind": "Pod", "metadata": {"name": "p"}, "spec": spec}), "p", True)
    )
    assert [(f.container_list, f.container, f.pointer) for f in inventory.images] == [
        ("containers", "a", "/spec/containers/0/image"),
        ("containers", "b", "/spec/containers/1/image"),
        ("initContainers", "i", "/spec/initContainers/0/image"),
        ("ephemeralContainers", "e", "/spec/ephemeralContainers/0/image"),
    ]
    assert inventory.images[0].namespace is None


def test_yaml_stream_counts_documents_and_skips_empty_ones():
    text = textwrap.dedent(
        """\
        kind: Pod
        metadata: {name: one}
        spec: {containers: [{name: c, image: "a:1"}]}
        ---
        ---
        # only a comment
        ---
        kind: ConfigMap
        metadata: {name: settings}
        ---
        kind: Job
        apiVersion: batch/v1
        metadata: {generateName: run-}
        spec: {template: {spec: {containers: [{name: c, image: "b:2"}]}}}
        """
    )
    documents = parse_documents(text, "stream.yaml", as_json=False)
    assert [d.index for d in documents] == [1, 4, 5]
    inventory = find_images(documents)
    assert (inventory.documents, inventory.objects, inventory.workloads) == (3, 3, 2)
    assert [(f.kind, f.name, f.image, f.document) for f in inventory.images] == [
        ("Pod", "one", "a:1", 1),
        ("Job", "run-*", "b:2", 5),
    ]
    assert inventory.skipped == {"ConfigMap": 1}


def test_list_items_are_spread_and_typed_lists_lend_their_kind():
    items = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec("p:1")},
            {
                "apiVersion": "apps/v1",
                "kind": "DeploymentList",
                "items": [{"metadata": {"name": "d"}, "spec": template("d:1")}],
            },
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
        ],
    }
    inventory = find_images(parse_documents(json.dumps(items), "list.json", as_json=True))
    assert [(f.kind, f.name, f.image) for f in inventory.images] == [("Pod", "p", "p:1"), ("Deployment", "d", "d:1")]
    assert (inventory.documents, inventory.objects, inventory.skipped) == (1, 3, {"Secret": 1})


def test_a_container_without_an_image_is_reported_with_an_empty_image():
    inventory = find_images(parse_documents("kind: Pod\nspec: {containers: [{name: c}]}\n", "p.yaml", False))
    [found] = inventory.images
    assert (found.name, found.image) == ("(unnamed)", "")


def test_a_workload_without_a_pod_spec_has_no_images():
    inventory = find_images(
        parse_documents("kind: Deployment\napiVersion: apps/v1\nmetadata: {name: d}\n", "d.yaml", False)
    )
    assert inventory.workloads == 1 and inventory.images == []


@pytest.mark.parametrize(
    ("text", "as_json", "message"),
    [
        ("kind: Pod\nspec:\n  containers: [\n", False, "p.yaml:4:1: invalid YAML"),
        ("kind: Pod\n  bad: indent\n", False, "p.yaml:2:6: invalid YAML: mapping values are not allowed here"),
        ('{"kind": "Pod",\n "spec": }', True, "p.yaml:2:10: invalid JSON: Expecting value"),
        ("- just\n- a list\n", False, "p.yaml: document 1 is a list, not a Kubernetes object"),
        ("kind: List\nitems: [1, 2]\n", False, "p.yaml: document 1: List.items must be a list of objects"),
        (
            "kind: Pod\nmetadata: {name: p}\nspec: {containers: {}}\n",
            False,
            "p.yaml: document 1 (Pod p): spec.containers must be a list of objects",
        ),
        ("kind: Pod\nspec: {containers: [{image: 3}]}\n", False, "containers[0].image must be a string"),
        ("kind: Pod\nspec: [1]\n", False, "spec must be an object"),
    ],
)
def test_unreadable_manifests_name_the_source_and_line(text, as_json, message):
    with pytest.raises(ManifestError) as caught:
        find_images(parse_documents(text, "p.yaml", as_json))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
