"""Gateway adapters (QVO, Openpay, Khipu, Payvalida), each implementing ``billing.ports``.

``billing`` never imports this package; the engine finds adapters through entry points.
"""
