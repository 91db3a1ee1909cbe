SELECT sum(amount_cents)::int8
FROM <<tables.invoices>>
WHERE customer_email = :email
