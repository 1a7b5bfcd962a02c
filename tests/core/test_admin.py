"""The admin's shared helper that shows a service's refusal on a form."""

from django import forms
from django.core.exceptions import ValidationError

from core.admin import show_refusal
from core.errors import Conflict, InvalidInput


class PostingForm(forms.Form):
    amount = forms.DecimalField()
    reference = forms.CharField()


def refused(error, field_names=()) -> dict[str, list[tuple[str, str]]]:
    form = PostingForm(data={"amount": "5.00", "reference": "R-1"})
    assert form.is_valid()
    show_refusal(form, error, field_names)
    return {
        name: [(error.code, " ".join(error.messages)) for error in errors]
        for name, errors in form.errors.as_data().items()
    }


def test_the_detail_goes_above_the_form_and_each_field_problem_on_its_field():
    error = InvalidInput(
        "Not that amount.",
        fields={
            "amount": [{"code": "invalid_amount", "message": "Positive, minor unit."}],
            "tenant": [{"code": "suspended", "message": "Suspended."}],  # not on this form
        },
    )

    assert refused(error) == {
        "__all__": [("invalid", "Not that amount."), ("suspended", "tenant: Suspended.")],
        "amount": [("invalid_amount", "Positive, minor unit.")],
    }


def test_a_refusal_naming_no_field_is_shown_on_the_fields_the_admin_gives():
    error = Conflict("R-1 was posted with another amount.")

    assert refused(error, ["reference"]) == {
        "__all__": [("conflict", "R-1 was posted with another amount.")],
        "reference": [("conflict", "The request conflicts with the current state.")],
    }
    assert refused(error) == {"__all__": [("conflict", "R-1 was posted with another amount.")]}


def test_a_model_validation_error_from_the_service_is_shown_per_field():
    error = ValidationError(
        {"amount": [ValidationError("Too much.", code="max")], "__all__": ["Not now."]}
    )

    assert refused(error) == {"amount": [("max", "Too much.")], "__all__": [(None, "Not now.")]}
