from core.errors import ApplicationError, Conflict


class CapacityInUse(Conflict):
    code = "capacity_in_use"
    default_detail = "Booked GPUs would exceed the pool's capacity after this change."


class InsufficientCapacity(Conflict):
    code = "insufficient_capacity"
    default_detail = "Not enough free GPUs in the pool for the whole window."


class InvalidWindow(ApplicationError):
    code = "invalid_window"
    default_detail = "The time window is not valid."


class InvalidIncident(ApplicationError):
    code = "invalid_incident"
    default_detail = "The incident is not valid."
