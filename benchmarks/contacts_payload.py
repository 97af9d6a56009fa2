"""The payload rows of the reverse-ETL benchmarks: `rows` contacts shaped like activation.sync_salesforce_contacts
(the model's columns and types, nulls and accents included), generated in DuckDB."""


def contacts_select(rows: int, id_prefix: str, id_width: int) -> str:
    """A select of `rows` contacts; profile ids are `id_prefix` + the row number zero-padded to `id_width`."""
    return f"""
        select
            '{id_prefix}' || lpad(cast(i as varchar), {id_width}, '0') as profile_id,
            (['Anna', 'Jörg', 'Mary-Kate', 'Li', 'Omar'])[1 + i % 5] as first_name,
            'Example' || i as last_name,
            'student' || i || '@uni.example.org' as email,
            '+49151' || (1000000 + i) as phone,
            (['inquiry', 'applicant', 'admitted', 'enrolled', 'alumni'])[1 + i % 5] as lifecycle_stage,
            round((i % 1000) / 10.0, 1) as engagement_score,
            case when i % 3 = 0 then 'applicant_stalled;dormant_inquiry' end as segments,
            timestamp '2026-01-01' + to_seconds(i) as last_seen_at,
            i % 7 = 0 as has_opted_out_of_email,
            'implied' as email_consent,
            'unknown' as whatsapp_consent
        from range({rows}) as t(i)
    """
