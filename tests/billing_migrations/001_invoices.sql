CREATE TABLE IF NOT EXISTS {{tables.invoices}} (
    id BIGSERIAL PRIMARY KEY,
    customer_email TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents >= 0)
);
