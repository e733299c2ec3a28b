<?php
$db['default']['password'] = '';
$CFG->dbpass    = getenv('MOODLE_DB_PASSWORD');
$password = $_POST['password'];
public $password = 'password';
$config['api_key'] = '<your api key>';
