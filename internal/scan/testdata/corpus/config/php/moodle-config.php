<?php
unset($CFG);
global $CFG;
$CFG = new stdClass();
$CFG->dbtype    = 'pgsql';
$CFG->dbhost    = 'pg.internal';
$CFG->dbuser    = 'moodle';
$CFG->dbpass    = '@@R::A62:20@@';
$CFG->wwwroot   = 'https://learn.internal';
