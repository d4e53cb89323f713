-- The activity log's rows are updated once a second while their minute lasts (each flush adds
-- the counts of the last second). With full pages every such update moves the row to another
-- page and adds an entry to both indexes; with room left on each page PostgreSQL updates in
-- place (a heap-only tuple: no index changes, as none of the updated columns is indexed).
-- New pages keep half their room free; existing pages are left as they are. Re-runnable.
alter table connect.activity set (fillfactor = 50);
