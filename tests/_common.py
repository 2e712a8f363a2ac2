"""Helpers shared by the test modules."""

# The expected failures of scikit-learn's common checks for the skorch-based
# estimators, each with its reason.
EXPECTED_FAILED_CHECKS = {
    "check_no_attributes_set_in_init": (
        "skorch's NeuralNet keeps its bookkeeping (history_, initialized_, "
        "virtual_params_) from construction on, and routes module__* parameters "
        "through **kwargs"),
    "check_do_not_raise_errors_in_init_or_set_params": (
        "skorch's set_params builds the callbacks at once, so the check's "
        "arbitrary `callbacks` value fails in set_params rather than in fit"),
}
