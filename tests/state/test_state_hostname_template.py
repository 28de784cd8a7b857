"""The HostnameGenerator template dialect: what renders, and what is refused."""

from __future__ import annotations

import pytest

from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.errors import ValidationError
from zonemesh.resources.hostname_template import TemplateContext, TemplateError, parse_template

CTX = TemplateContext(
    name="echo-6f1c2e",
    display_name="echo",
    zone="z2",
    mesh="default",
    namespace="ns",
    labels={"team": "payments", "k8s.kuma.io/service-name": "svc"},
)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ .DisplayName }}.svc.{{ .Zone }}.mesh.local", "echo.svc.z2.mesh.local"),
        ("{{.Name}}.{{.Mesh}}.{{.Namespace}}", "echo-6f1c2e.default.ns"),
        ('{{ label "team" }}.{{ label `k8s.kuma.io/service-name` }}', "payments.svc"),
        ("static.mesh.local", "static.mesh.local"),
        ("{{   .DisplayName   }}", "echo"),
    ],
)
def test_renders(template, expected):
    assert parse_template(template).render(CTX) == expected


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{{ .Display }}.mesh.local", "unknown field .Display"),
        ("{{ .DisplayName ", "unclosed action"),
        ("{{ }}.mesh.local", "empty action"),
        ("{{ printf .Name }}", "unsupported action"),
        ("{{ .Name | upper }}", "unsupported action"),
        ("{{ label team }}", "unsupported action"),
        ('{{ label "a" "b" }}', "unsupported action"),
    ],
)
def test_refuses(template, fragment):
    with pytest.raises(TemplateError, match=fragment):
        parse_template(template)


def test_missing_label_fails_at_render():
    template = parse_template('{{ label "absent" }}.mesh.local')
    with pytest.raises(TemplateError, match='label "absent" not found'):
        template.render(CTX)


def test_invalid_template_rejected_on_apply():
    doc = {
        "type": "HostnameGenerator",
        "name": "bad",
        "spec": {"selector": {"meshService": {}}, "template": "{{ .Oops }}.mesh.local"},
    }
    with pytest.raises(ValidationError) as err:
        resource_from_wire(doc)
    assert str(err.value).startswith("spec.template: could not parse template: unknown field .Oops")
