"""``FieldsBuiltOnce``: a ModelSerializer's fields built once per class, a copy per instance."""

from rest_framework import serializers

from capacity.models import GpuModel
from core.api.serializers import FieldsBuiltOnce, _shared, represent


class PlainGpuModelSerializer(serializers.ModelSerializer):
    label = serializers.CharField(source="name")

    class Meta:
        model = GpuModel
        fields = ["slug", "label", "memory_gb", "vendor"]


class GpuModelBuiltOnce(FieldsBuiltOnce, PlainGpuModelSerializer):
    pass


def test_each_instance_gets_its_own_bound_fields():
    first, second = GpuModelBuiltOnce(), GpuModelBuiltOnce()

    for name in ("slug", "label", "memory_gb"):
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first
        assert second.fields[name].parent is second


def test_the_fields_are_those_drf_builds():
    model = GpuModel(slug="h100", name="H100", memory_gb=80, vendor="nvidia")
    built_once, plain = GpuModelBuiltOnce(model), PlainGpuModelSerializer(model)

    assert list(built_once.fields) == list(plain.fields)
    for name, field in plain.fields.items():
        assert type(built_once.fields[name]) is type(field)
    assert (
        built_once.data
        == plain.data
        == {
            "slug": "h100",
            "label": "H100",
            "memory_gb": 80,
            "vendor": "nvidia",
        }
    )
    # Built again for a second instance: still the same answer.
    assert GpuModelBuiltOnce(model).data == plain.data


def test_represent_renders_what_data_renders_with_one_shared_serializer():
    h100 = GpuModel(slug="h100", name="H100", memory_gb=80, vendor="nvidia")
    b200 = GpuModel(slug="b200", name="B200", memory_gb=192, vendor="nvidia")

    # each object as .data renders it, however many objects the shared instance rendered
    assert represent(PlainGpuModelSerializer, h100) == PlainGpuModelSerializer(h100).data
    assert represent(PlainGpuModelSerializer, b200) == PlainGpuModelSerializer(b200).data
    assert represent(PlainGpuModelSerializer, h100) == {
        "slug": "h100",
        "label": "H100",
        "memory_gb": 80,
        "vendor": "nvidia",
    }
    # its fields were built once, for one instance
    assert _shared(PlainGpuModelSerializer) is _shared(PlainGpuModelSerializer)
