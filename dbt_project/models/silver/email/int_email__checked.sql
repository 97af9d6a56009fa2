{#-
    Every email record landed with its verdict: `quarantine_reason` is null for an accepted record, else
    the record's own failed check (int_email__parsed) or the duplicate it is (int_email__deduplicated).
    The accepted rows are the staging model, the others the quarantine: landed = silver + quarantined.
-#}
{{ config(materialized='view') }}

{{ cdp.checked_records('int_email__parsed', 'int_email__deduplicated', key_label='sg_event_id') }}
